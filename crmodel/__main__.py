from crmodel.entry import main

main()
