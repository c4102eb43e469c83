"""kubedistill/core"""
