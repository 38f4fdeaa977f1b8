"""Class names and colour palettes of the released segmentation heads (ADE20K: 150 classes, VOC2012: 21).

Class ``i`` of a head's output is ``*_CLASS_NAMES[i]`` and is drawn in colour ``*_PALETTE[i]``:

- ADE20K (``reduce_zero_label``): the 150 classes of ``objectInfo150`` (synonyms separated by ``;``), in mmseg's
  ADE20K colours. Label 0 of the annotation files ("other") is ignored and has no output.
- VOC2012: background + 20 object classes, in the standard VOC colours (background black).

The release's notebook draws ``colormap[pred + 1]`` for both datasets; that is right for ADE20K (its colormap
starts with an unused black entry) but shifts every VOC colour by one and overflows for class 20 (tvmonitor).
Here class ``i`` always has colour ``PALETTE[i]``.
"""

from __future__ import annotations

__all__ = ["ADE20K_CLASS_NAMES", "ADE20K_PALETTE", "VOC2012_CLASS_NAMES", "VOC2012_PALETTE", "voc_palette"]

# 150 "|"-separated names, in class order (0 = wall ... 149 = flag).
_ADE20K_NAMES = (
    "wall|building;edifice|sky|floor;flooring|tree|ceiling|road;route|bed|windowpane;window|grass|cabinet|"
    "sidewalk;pavement|person;individual;someone;somebody;mortal;soul|earth;ground|door;double;door|table|"
    "mountain;mount|plant;flora;plant;life|curtain;drape;drapery;mantle;pall|chair|"
    "car;auto;automobile;machine;motorcar|water|painting;picture|sofa;couch;lounge|shelf|house|sea|mirror|"
    "rug;carpet;carpeting|field|armchair|seat|fence;fencing|desk|rock;stone|wardrobe;closet;press|lamp|"
    "bathtub;bathing;tub;bath;tub|railing;rail|cushion|base;pedestal;stand|box|column;pillar|signboard;sign|"
    "chest;of;drawers;chest;bureau;dresser|counter|sand|sink|skyscraper|fireplace;hearth;open;fireplace|"
    "refrigerator;icebox|grandstand;covered;stand|path|stairs;steps|runway|case;display;case;showcase;vitrine|"
    "pool;table;billiard;table;snooker;table|pillow|screen;door;screen|stairway;staircase|river|bridge;span|"
    "bookcase|blind;screen|coffee;table;cocktail;table|toilet;can;commode;crapper;pot;potty;stool;throne|"
    "flower|book|hill|bench|countertop|stove;kitchen;stove;range;kitchen;range;cooking;stove|palm;palm;tree|"
    "kitchen;island|"
    "computer;computing;machine;computing;device;data;processor;electronic;computer;information;processing;system|"
    "swivel;chair|boat|bar|arcade;machine|hovel;hut;hutch;shack;shanty|"
    "bus;autobus;coach;charabanc;double-decker;jitney;motorbus;motorcoach;omnibus;passenger;vehicle|towel|"
    "light;light;source|truck;motortruck|tower|chandelier;pendant;pendent|awning;sunshade;sunblind|"
    "streetlight;street;lamp|booth;cubicle;stall;kiosk|"
    "television;television;receiver;television;set;tv;tv;set;idiot;box;boob;tube;telly;goggle;box|"
    "airplane;aeroplane;plane|dirt;track|apparel;wearing;apparel;dress;clothes|pole|land;ground;soil|"
    "bannister;banister;balustrade;balusters;handrail|escalator;moving;staircase;moving;stairway|"
    "ottoman;pouf;pouffe;puff;hassock|bottle|buffet;counter;sideboard|poster;posting;placard;notice;bill;card|"
    "stage|van|ship|fountain|conveyer;belt;conveyor;belt;conveyer;conveyor;transporter|canopy|"
    "washer;automatic;washer;washing;machine|plaything;toy|swimming;pool;swimming;bath;natatorium|stool|"
    "barrel;cask|basket;handbasket|waterfall;falls|tent;collapsible;shelter|bag|minibike;motorbike|cradle|"
    "oven|ball|food;solid;food|step;stair|tank;storage;tank|trade;name;brand;name;brand;marque|"
    "microwave;microwave;oven|pot;flowerpot|animal;animate;being;beast;brute;creature;fauna|"
    "bicycle;bike;wheel;cycle|lake|dishwasher;dish;washer;dishwashing;machine|"
    "screen;silver;screen;projection;screen|blanket;cover|sculpture|hood;exhaust;hood|sconce|vase|"
    "traffic;light;traffic;signal;stoplight|tray|"
    "ashcan;trash;can;garbage;can;wastebin;ash;bin;ash-bin;ashbin;dustbin;trash;barrel;trash;bin|fan|"
    "pier;wharf;wharfage;dock|crt;screen|plate|monitor;monitoring;device|bulletin;board;notice;board|shower|"
    "radiator|glass;drinking;glass|clock|flag"
)
# 150 colours as RRGGBB hex, in class order.
_ADE20K_COLOURS = (
    "787878b4787806e6e650323204c8037878508c8c8ccc05ffe6e6e604fa07e005ffebff0796053d78784608ff33ff06528fff8cccff04"
    "ff3307cc46030066c83de6faff06330b66ffff0747ff09e00907e6dcdcdcff095c7009ff08ffd607ffe0ffb8060aff47ff290a07ffff"
    "e0ff086608ffff3d06ffc207ff7a0800ff14ff0829ff05990633ffeb0cffa0961400a3ff8c8c8cfa0a0f14ff001fff00ff1f00ffe000"
    "99ff000000ffff470000ebff00adff1f00ff0bc8c8ff520000fff5003dff00ff7000ff85ff0000ffa300ff6600c2ff00008fff33ff00"
    "0052ff00ff2900ffad0a00ffadff0000ff99ff5c00ff00ffff00f5ff0066ffad00ff0014ffb8b8001fff00ff3d0047ffff00cc00ffc2"
    "00ff52000aff0070ff3300ff00c2ff007aff00ffa3ff990000ff0aff70008fff005200ffa3ff00ffeb0008b8aa8500ff00ff5cb800ff"
    "ff001f00b8ff00d6ffff00705cff0000e0ff70e0ff46b8a0a300ff9900ff47ff00ff00a3ffcc00ff008f00ffeb85ff00ff00ebf500ff"
    "ff007afff5000abed4d6ff0000ccff1400ffffff000099ff0029ff00ffcc2900ff29ff00ad00ff00f5ff4700ff7a00ff00ffb8005cff"
    "b8ff000085ffffd60019c2c266ff005c00ff"
)

ADE20K_CLASS_NAMES: tuple[str, ...] = tuple(_ADE20K_NAMES.split("|"))
ADE20K_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(_ADE20K_COLOURS[i + k : i + k + 2], 16) for k in (0, 2, 4)) for i in range(0, len(_ADE20K_COLOURS), 6)
)

VOC2012_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_palette(num_classes: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map: the bits of the class index spread over the high bits of R, G and B."""
    colours = []
    for index in range(num_classes):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= (code & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        colours.append((red, green, blue))
    return tuple(colours)


VOC2012_PALETTE: tuple[tuple[int, int, int], ...] = voc_palette(21)
