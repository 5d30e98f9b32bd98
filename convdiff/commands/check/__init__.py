"""commands/check"""
