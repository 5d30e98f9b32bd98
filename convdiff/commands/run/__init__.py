"""commands/run"""
