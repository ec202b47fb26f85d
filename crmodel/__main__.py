from crmodel.cli import main

main()
