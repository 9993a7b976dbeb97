"""gateway/rtmp"""
