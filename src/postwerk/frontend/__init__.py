"""The Client Access front end: what happens between a client's login and its mailbox."""
