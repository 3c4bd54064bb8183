import sys

from supervisor.daemon_main import main

sys.exit(main())
