"""protocols/sasl"""
