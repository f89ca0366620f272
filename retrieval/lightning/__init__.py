"""Lightning glue: modules and callbacks that call the library's functions."""
