from rund_trio.cli.main import main

raise SystemExit(main())
