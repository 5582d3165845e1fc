"""placeholder"""

def step_setup(spank, args, options):
    return None

def enter(spank, args, options):
    return None

def step_exit(spank, args, options):
    return None
