"""What both BGP speakers share: the child process they run, supervised one way."""
