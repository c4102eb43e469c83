"""kubedistill_kfp"""
