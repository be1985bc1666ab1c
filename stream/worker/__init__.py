"""`rfm worker`: the Faust adapter that feeds the shell. ``app`` builds the Faust app, its agent
and timer; ``faust_patches`` holds every override of Faust's private internals; ``tuning`` the
process settings (event loop, garbage collector)."""
