"""Hand-written source rows (DATA_SPEC.md section 1) and the Kafka values they must become."""

from __future__ import annotations

PIN_ID = "fbe53c66-3442-4773-b19e-d3ec6f54dddf"

# A story-format post: placeholders in every text field are valid raw data.
PIN = {
    "index": 7528,
    "unique_id": PIN_ID,
    "title": "No Title Data Available",
    "description": "No description available Story format",
    "poster_name": "User Info Error",
    "follower_count": "User Info Error",
    "tag_list": "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e",
    "is_image_or_video": "multi-video(story page format)",
    "image_src": "Image src error.",
    "downloaded": 0,
    "save_location": "Local save in /data/mens-fashion",
    "category": "mens-fashion",
}
PIN_VALUE = (
    b'{"index":7528,"unique_id":"fbe53c66-3442-4773-b19e-d3ec6f54dddf",'
    b'"title":"No Title Data Available","description":"No description available Story format",'
    b'"poster_name":"User Info Error","follower_count":"User Info Error",'
    b'"tag_list":"N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e",'
    b'"is_image_or_video":"multi-video(story page format)","image_src":"Image src error.",'
    b'"downloaded":0,"save_location":"Local save in /data/mens-fashion","category":"mens-fashion"}'
)

# The older generation: 11 fields, no poster_name; real-world text (Cyrillic, emoji, NBSP, …).
OLD_PIN_ID = "da8745a0-e2a2-4f3c-9e1e-2d0f1a6bd3a1"
OLD_PIN = {
    "index": 2863,
    "unique_id": OLD_PIN_ID,
    "title": "Ёлка 🎄 своими\u00a0руками…",
    "description": "Идеи для праздника",
    "follower_count": "26k",
    "tag_list": "Christmas Tree,Xmas Crafts",
    "is_image_or_video": "image",
    "image_src": "https://i.pinimg.com/originals/aa/bb/cc/aabbcc.jpg",
    "downloaded": 1,
    "save_location": "Local save in /data/christmas",
    "category": "christmas",
}
OLD_PIN_VALUE = (
    '{"index":2863,"unique_id":"da8745a0-e2a2-4f3c-9e1e-2d0f1a6bd3a1",'
    '"title":"Ёлка 🎄 своими\u00a0руками…","description":"Идеи для праздника",'
    '"follower_count":"26k","tag_list":"Christmas Tree,Xmas Crafts","is_image_or_video":"image",'
    '"image_src":"https://i.pinimg.com/originals/aa/bb/cc/aabbcc.jpg","downloaded":1,'
    '"save_location":"Local save in /data/christmas","category":"christmas"}'
).encode()

# Datetime with a space (one of the three wire serialisations).
GEO = {
    "ind": 7528,
    "timestamp": "2020-08-28 03:52:47",
    "latitude": -89.9787,
    "longitude": -173.293,
    "country": "Antarctica (the territory South of 60 deg S)",
}
GEO_VALUE = (
    b'{"ind":7528,"timestamp":"2020-08-28T03:52:47Z","latitude":-89.9787,"longitude":-173.293,'
    b'"country":"Antarctica (the territory South of 60 deg S)"}'
)

# Zoned with fractional seconds.
USER = {
    "ind": 7528,
    "first_name": "Abigail",
    "last_name": "Ali",
    "age": 20,
    "date_joined": "2015-10-24T13:23:51.250000+02:00",
}
USER_VALUE = (
    b'{"ind":7528,"first_name":"Abigail","last_name":"Ali","age":20,'
    b'"date_joined":"2015-10-24T11:23:51.250000Z"}'
)
