"""Procedurally rendered photos of books, labelled as a VIA 2.x export.

booksegm's default training run learns from this set, so it needs no download. Scenes are drawn
with numpy and OpenCV only: bookcases with rows of spines (upright, leaning, lying in small
stacks, now and then one facing out, a vase in front), and tables with single and stacked books
seen in perspective, some standing against the wall behind. Each photo gets its own shadows,
camera tilt, uneven lighting, blur and sensor noise; about 5% of photos show no book at all.

Labels are the *visible* outline of each book: items are drawn back to front, the part of a
book hidden by later items is cut away, and layouts that would split a book into pieces or punch
a hole in it are rejected, so one polygon describes each book. Books of which little is left in
the photo are not labelled.

``generate_dataset(out_dir, ...)`` writes ``out_dir/images/synth_00000.jpg ...`` and then
``out_dir/via_region_data.json``, whose ``filename`` entries are bare file names: the image root
for reading it is ``out_dir/images``. Every image is rendered from ``np.random.default_rng([seed,
index])``, so an image does not depend on how many are generated.

``render_books`` also says where each book of a row was put (its board, its step along the row, its
level in a stack), and ``shelf_order`` turns that into the row and position a shelf inventory
should find (tests/test_inventory.py); recording it draws nothing and no random number.

Coordinates follow booksegm.data.records: continuous pixel coordinates with the origin at the
top-left corner of the top-left pixel, so pixel (i, j) covers [i, i+1) x [j, j+1).

The package, bottom up: geometry.py (polygons on a fine raster, painting them) and textures.py
(palettes, spines, covers, wood, walls); scenes.py (items drawn back to front: rows and stacks of
books, bookcases, tables, and what is seen of each book); camera.py (the photo of a scene and the
books labelled in it); writer.py (the set on disk).
"""

from booksegm.data.synthetic.camera import STYLES, render_books, render_scene
from booksegm.data.synthetic.scenes import ShelfPlace, shelf_order
from booksegm.data.synthetic.writer import ANNOTATION_FILE, IMAGE_FOLDER, generate_dataset

__all__ = ["ANNOTATION_FILE", "IMAGE_FOLDER", "STYLES", "ShelfPlace", "generate_dataset", "render_books",
           "render_scene", "shelf_order"]
