"""The model kinds as tasks for pcae.train's loop, one module each: pixelcnn (`pcae train`),
autoencoder (`pcae train-ae`), portrait (`pcae train-portraits`).

A task module imports the models, the checkpoint files, the judges and the loop, never another
task or pcae.kinds (the table of kinds imports them).
"""
