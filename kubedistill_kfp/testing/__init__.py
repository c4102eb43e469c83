"""kubedistill_kfp/testing"""
