module homelab/standin

go 1.19
