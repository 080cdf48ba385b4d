from guardian.stack.cli import stack

stack()
