"""Models and their runtimes: keypoint layouts, pose decoding, the SARDE graph, inference backends."""
