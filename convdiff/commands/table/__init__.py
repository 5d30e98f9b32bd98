"""commands/table"""
