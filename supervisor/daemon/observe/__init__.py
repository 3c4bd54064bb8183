"""Observability: Prometheus metrics, a live status page, supervisorctl.

All of it is off unless configured (``[observe]``), and none of it runs in
the loop's thread. Why threads beside the loop, and not listeners inside
it: the loop's job is moving tasks; an HTTP parser, an event stream per
browser and a blocking-by-design XML-RPC API (``startProcess`` waits for
RUNNING) would each add code and latency to every turn. Instead the
observers are plain stdlib threading servers that talk to the daemon only
through its control socket, exactly as phalanxctl does::

    browser / Prometheus --HTTP--> web.py ----------+
                                   sse.py           |  source.py: sampler thread,
    supervisorctl --XML-RPC/unix--> rpcserver.py    |  one `snapshot` a second
                                    supervisorapi.py|
                                                    v
                         link.py: DEALER --> control socket --> loop
                                                     |
                         control command `snapshot` -> snapshot.take(daemon)

So the loop pays for one control command per second (a snapshot) plus
whatever an operator asks for; an observer that hangs or crashes cannot
stop it; and the one module that reads daemon state (snapshot.py) and the
counters the loop keeps (counters.py) are all the daemon knows of this.
"""
