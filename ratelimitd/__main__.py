from ratelimitd.cli import main

raise SystemExit(main())
