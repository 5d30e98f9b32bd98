"""commands/localize"""
