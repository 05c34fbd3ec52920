from pcae.entry import main

main()
