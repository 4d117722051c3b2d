"""The sim lab harness: container engine, node images, containers and the storage VM.

Everything here only touches loopback, the docker bridge network the harness creates, and the
containers and VMs it starts itself.
"""
