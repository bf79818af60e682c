# Build every recsys image with one tag:
#   TAG=0.1.0 REGISTRY=europe-west4-docker.pkg.dev/my-project/recsys docker buildx bake -f deploy/docker/docker-bake.hcl
#   (or `make images`). Add --push to publish, --set '*.platform=linux/amd64,linux/arm64' for multi-arch.
# Image names match the Helm chart: <REGISTRY>/recsys-<service>:<TAG> (profiler: <TAG>-<TORCH_VARIANT>).

variable "REGISTRY" {
  default = "ghcr.io/recsys"
}

variable "TAG" {
  default = "dev"
}

# GPU build of torch for the profiler image (a PyTorch wheel index name: cu126, cu128, ... or cpu).
variable "TORCH_VARIANT" {
  default = "cu128"
}

group "default" {
  targets = ["gateway", "ingest", "retriever", "explainer", "als", "profiler", "dashboard"]
}

target "_common" {
  context   = "."
  platforms = ["linux/amd64"]
  labels = {
    "org.opencontainers.image.version" = "${TAG}"
    "org.opencontainers.image.source"  = "https://github.com/recsys/recsys"
  }
}

target "gateway" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/gateway.Dockerfile"
  tags       = ["${REGISTRY}/recsys-gateway:${TAG}"]
}

target "ingest" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/ingest.Dockerfile"
  tags       = ["${REGISTRY}/recsys-ingest:${TAG}"]
}

target "retriever" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/retriever.Dockerfile"
  tags       = ["${REGISTRY}/recsys-retriever:${TAG}"]
}

target "explainer" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/explainer.Dockerfile"
  tags       = ["${REGISTRY}/recsys-explainer:${TAG}"]
}

target "als" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/als.Dockerfile"
  tags       = ["${REGISTRY}/recsys-als:${TAG}"]
}

target "profiler" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/profiler.Dockerfile"
  args = {
    TORCH_VARIANT = "${TORCH_VARIANT}"
  }
  tags = ["${REGISTRY}/recsys-profiler:${TAG}-${TORCH_VARIANT}"]
}

target "dashboard" {
  inherits   = ["_common"]
  dockerfile = "deploy/docker/dashboard.Dockerfile"
  tags       = ["${REGISTRY}/recsys-dashboard:${TAG}"]
}
