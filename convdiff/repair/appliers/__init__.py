"""repair/appliers"""
