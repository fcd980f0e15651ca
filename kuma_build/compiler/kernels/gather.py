"""placeholder"""

def lower(node):
    raise NotImplementedError
