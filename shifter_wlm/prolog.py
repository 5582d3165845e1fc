"""placeholder"""

def run(spank, args, options):
    return None
