from leveret.cli.main import main

main()
