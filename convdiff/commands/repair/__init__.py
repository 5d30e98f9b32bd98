"""commands/repair"""
