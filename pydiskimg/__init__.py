"""pydiskimg: bootable disk images (MBR/GPT, ext4, FAT32) written from a tree, in pure Python."""

__version__ = "0.1.0"
