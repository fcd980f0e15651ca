from kuma_build.cli import main

raise SystemExit(main())
