"""Starting a job's process and watching it end: the seam between the
supervisor and the operating system."""
