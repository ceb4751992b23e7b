from avcc_stream.cli import main

raise SystemExit(main())
