"""`python -m mssl_core`: the command line (cli.py), also installed as `mssl-label-assist`."""

from mssl_core.cli import main

raise SystemExit(main())
