from book.site import main

main()
