from herder.cli.main import main

raise SystemExit(main())
