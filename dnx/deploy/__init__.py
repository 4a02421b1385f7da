"""Beyond one machine: publish a repository to object storage, deploy it on Kubernetes."""
