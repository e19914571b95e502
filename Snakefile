# Workflow stub: the full reproduction graph lands with the workflow issue.
rule all:
    shell: "echo 'wwgan workflow: not yet implemented, see README'"
