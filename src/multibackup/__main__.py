from multibackup.cli.main import main

raise SystemExit(main())
