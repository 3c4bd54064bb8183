import sys

from supervisor.ctl.main import main

sys.exit(main())
