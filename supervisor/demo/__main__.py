import sys

from supervisor.demo.flow import main

sys.exit(main())
