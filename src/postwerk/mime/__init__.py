"""mime"""
