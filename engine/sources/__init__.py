"""What a job reads beyond capture objects: batch manifests (`manifests`), transform inputs read in step with
their outputs (`transform`), and the prediction sources of a merge (`predictions`)."""
