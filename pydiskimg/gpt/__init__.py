"""The GPT family: header, entry array, backups and CRCs [UEFI §5.3].

``structs`` declares the records (and the entry array's numpy dtype), ``write`` lays a GPT on
an image, ``read`` parses and checks one.
"""
