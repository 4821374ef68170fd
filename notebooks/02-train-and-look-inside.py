# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Train the reference CNN and look inside it
#
# Notebook 1 slid hand-set windows over a digit. Here a network learns its
# own: the reference CNN (conv 32@3x3, max-pool 2, conv 64@3x3, max-pool 2,
# dense 128, dropout 0.5, dense 10). We train it for a short while, then
# look at how it learned (the training curves), what it learned (the
# first layer's filters, the feature maps of one digit) and where it fails
# (the confusion matrix, the digits it gets wrong).
#
# The settings below keep the run short: a couple of epochs on part of the
# training set take seconds and reach about 96-97%. `fastconv-train`
# trains on all 55,000 images for 12 epochs and reaches 99.2-99.3% in about
# two minutes on 2 cores (README, Training).

# %% tags=["parameters"]
DATA_DIR = None  # a folder holding the four MNIST files; None: $FASTCONV_DATA, else the download cache
LIMIT = 10_000  # training images (of the 55,000 before the 5,000 held out for validation)
EPOCHS = 2
VALIDATION = 5_000  # validation images checked after every epoch (at most 5,000)
TEST_LIMIT = 10_000  # test images for the final accuracy, the confusion matrix and the wrong digits

# %%
import fastconv  # first: it sets how OpenBLAS and OpenMP threads wait before NumPy loads them (README, Threads)

import numpy as np
from IPython.display import display

from fastconv import data, inspection, models, viz
from fastconv.optim import Adam

mnist = data.load_dataset("mnist", DATA_DIR)
x_train, y_train = mnist.x_train[:-5000][:LIMIT], mnist.y_train[:-5000][:LIMIT]
x_val, y_val = mnist.x_train[-5000:][:VALIDATION], mnist.y_train[-5000:][:VALIDATION]
x_test, y_test = mnist.x_test[:TEST_LIMIT], mnist.y_test[:TEST_LIMIT]
print(f"training {x_train.shape}, validation {x_val.shape}, test {x_test.shape}; pixels {x_train.dtype} 0..1")

# %% [markdown]
# ## The model
#
# A model at the end of a cell shows its layers as a table (the same rows as
# `model.summary()`): each layer's output shape for a batch of any size
# (`None`), its parameters, and the receptive field of one of its output
# pixels in input pixels (notebook 1).

# %%
model = models.build("cnn", seed=0)
model

# %% [markdown]
# ## Training
#
# `fit` shows the network a batch of 64 images at a time: forward pass,
# loss, backward pass, an Adam step (the concepts guide writes that loop
# out at the end of section 8). The bar shows the running loss and
# accuracy; after each epoch, the accuracy on the validation images, which
# it never trains on.

# %%
history = model.fit(x_train, y_train, epochs=EPOCHS, optimizer=Adam(1e-3), validation_data=(x_val, y_val))
test_loss, test_accuracy = model.evaluate(x_test, y_test)
print(f"test accuracy {test_accuracy:.4f} on {len(y_test):,} images never seen in training")

# %% [markdown]
# The curves: loss and accuracy per epoch, on the training images (the mean
# over the epoch, while the weights moved) and on the validation images
# (after the epoch). The dashed line is the test accuracy.

# %%
viz.curves_figure(viz.history_epochs(model.history), f"{LIMIT:,} training images",
                  test_accuracy=test_accuracy, size=(900, 380))

# %% [markdown]
# ## What the first layer learned
#
# The 32 filters of the first conv layer, 3x3 weights each, red positive and
# blue negative. They began random (He initialisation); after a short
# training most still look it. Compare them with the hand-set edge kernel of
# notebook 1: light on one side, dark on the other.

# %%
viz.filters_figure(model, size=(800, 420))

# %% [markdown]
# ## Feature maps
#
# One test digit through the network: each conv and pool layer's output,
# one small picture per channel. The first conv's maps still look like the
# digit, each lighting up its own kind of edge; after each pool they are
# coarser, and the second conv's 64 maps respond to combinations of edges.

# %%
image = x_test[0]
caption = f"test digit 0, label {mnist.classes[y_test[0]]}"
for layer, maps in inspection.feature_maps(model, image):
    display(viz.feature_maps_figure(layer, maps, image, caption, size=(900, 450)))

# %% [markdown]
# ## Where it fails
#
# The confusion matrix counts, for each true digit (row), what the network
# said (column). The diagonal is right; every other cell is a kind of
# mistake.

# %%
probabilities = model.predict(x_test)  # (N, 10): softmax of the logits
predicted = probabilities.argmax(axis=1)
matrix = inspection.confusion_matrix(y_test, predicted, len(mnist.classes))
viz.confusion_figure(matrix, mnist.classes, size=(560, 520))

# %%
off_diagonal = matrix - np.diag(np.diag(matrix))
true, said = np.unravel_index(off_diagonal.argmax(), matrix.shape)
print(f"the most common mistake: a true {true} taken for {said}, {matrix[true, said]} times")

# %% [markdown]
# The wrong digits themselves, each with its index in the test set, the
# true label and the network's answer with its probability. Would a person
# have hesitated too?

# %%
wrong = inspection.misclassified(probabilities, y_test, x_test[:, 0], count=5)
print(f"{wrong['wrong']} of {wrong['checked']:,} wrong; the first:")
for digit in wrong["digits"]:
    print(f"  #{digit['index']}: true {digit['label']}, taken for {digit['predicted']} "
          f"(probability {digit['probability']:.0%})")
viz.errors_figure(x_test, y_test, probabilities, mnist.classes, count=24, size=(900, 620))

# %% [markdown]
# **Try it.** Train longer (`EPOCHS = 5`, `LIMIT = 55_000`) and draw the
# filters again: do edge detectors appear? Build `models.build("dense")`
# and compare its test accuracy after the same training. Then notebook 3
# times the kernels that ran all these convolutions.
