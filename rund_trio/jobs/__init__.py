"""Jobs: what a client asks to run (``spec``), where each job is in its life
(``state``, free of I/O), and the supervisor that runs them under trio."""
