from dnx.cli import main

main()
