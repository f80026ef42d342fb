from globetrain.cli.main import main

raise SystemExit(main())
