"""Task ``retina``: a federated class-conditional DCGAN of retinal fundus images (FedGAN)."""
