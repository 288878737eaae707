"""Bulk jobs on a Ray cluster: the `cluster.ray_pool.RayPool` backend runs `model.bulk` tasks (bulk
transcription, pseudo-labelling) on every node of a cluster, with the same interface as the local
pool. Needs the optional `[ray]` extra; the torch-free core and the server never import it (an
import-linter contract), so the server's image has no Ray."""
