"""The Expression Editor (AdvancedLivePortrait, specs/algorithms.md §7): our LivePortrait
networks, the face crop, the slider -> keypoint editor and the paste-back."""
