"""The MBR family: plain (legacy) MBR and the GPT's protective MBR.

``structs`` declares the records, ``write`` builds sector 0, ``read`` parses and checks it.
"""
