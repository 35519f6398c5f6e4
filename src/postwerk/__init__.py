"""postwerk: an Exchange Server 2013 organization, on the network, in Python."""

__version__ = "0.1.0"
